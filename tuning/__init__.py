"""The command line, and (as they are built) config, seeding, sweep, tracking and report: the only
package that knows Optuna and MLflow."""
