"""The `adapt-distill` command line: the same worker and core functions as the dashboard, from a
terminal. `parser` builds the argument parser and holds `main` (the console script; also
`python -m app.cli`); `common` holds what every group shares (progress bars, printing, sessions,
running runs); and one module per group of commands adds its subcommands: `serving` (up, worker,
dashboard, migrate, hash-password), `corpus`, `vocab`, `training` (adapt, distill, pipeline),
`runs`, `tasks` (task), `judging` (evaluate, bench, experiment, experiments, demo) and `models`."""
