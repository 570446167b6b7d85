from fslcli.cli import main

main()
