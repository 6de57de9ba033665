from research_optim.tune.app import cli

cli()
