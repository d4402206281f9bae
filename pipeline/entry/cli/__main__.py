from pipeline.entry.cli import main

main()
