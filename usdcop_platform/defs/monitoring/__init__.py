"""Monitoring and model lifecycle: drift, realized performance, shadow A/B, retraining, rollback."""
