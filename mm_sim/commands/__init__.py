"""One module per subcommand (see mm_sim/cli.py), and what their options share."""

# What --json means on every command that has it: the command's result, as one JSON object on
# stdout, in place of the text (progress and warnings stay on stderr).
JSON_HELP = "print the result as one JSON object on stdout instead of text"
