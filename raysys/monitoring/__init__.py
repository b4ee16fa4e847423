"""Monitoring: the fourth layer — windows, drift, live quality, alerts, retraining, release."""
