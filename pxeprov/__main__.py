from pxeprov.cli import main

main()
