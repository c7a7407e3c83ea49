"""The libraries the handlers use: settings (`config`), Block Kit builders (`blocks`), the Slack
gateway (`slack_out`) and metrics. They import nothing of the composition root above them nor of
`handlers/`, only `storage/` and outside packages."""
