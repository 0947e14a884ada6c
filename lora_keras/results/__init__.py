"""What a run reports: the rows and `results.csv` / `results.md` table (`table`), the statistics (`stats`),
configurations over seeds with `summary.csv` and the tests between them (`configurations`), plots
(`plots`), fitted trends and budget picks (`recommend`), and the front door writing them all (`report`)."""
