"""The counselling domain: treatment stages (config/stages.yaml) and the bundled sample client cases."""
