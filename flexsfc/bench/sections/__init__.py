"""One module per `flexsfc bench` section (the registry is flexsfc.bench.harness.SECTIONS): each
`run(ctx)` measures, cleans up what it created and returns the section's result envelope."""
