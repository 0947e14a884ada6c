"""What a run reports: the rows and `results.csv` / `results.md` table (`table`), plots
(`plots`), fitted trends and budget picks (`recommend`), and the front door writing them
all (`report`)."""
