from dermbridge.cli import main

main()
