"""flexsfc.autoscale"""
