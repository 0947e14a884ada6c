"""How training runs, whatever the backend: XLA's bounded shapes (`xla`), precision policies
(`precision`), the throughput benchmark (`benchmark`), quiet start-up (`gpu_probe`), the heap
(`heap`) and state files written whole (`atomic_files`). What differs per backend is in
`lora_keras.backends`."""
