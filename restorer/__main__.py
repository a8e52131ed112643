from restorer.cli.main import main

main()
