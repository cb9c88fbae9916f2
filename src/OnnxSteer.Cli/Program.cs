using OnnxSteer.Cli;

return CliApp.Run(args);
