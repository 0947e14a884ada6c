"""keras-tuner pieces of lora-keras: the HyperModel, strategies and the sweep tuner."""
