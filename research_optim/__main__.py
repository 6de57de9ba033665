from research_optim.app import cli

cli()
