"""The conformance corpus (upstream's answers) and helpers shared by the autoscaler tests."""
