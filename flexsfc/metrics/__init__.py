"""flexsfc.metrics"""
