from bertforge.cli.main import cli

cli(prog_name="bertforge")
