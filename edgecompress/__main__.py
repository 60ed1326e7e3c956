from edgecompress.cli.main import main

main()
