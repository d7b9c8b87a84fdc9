"""What every process shows its operators: log output and the metrics HTTP endpoint."""
