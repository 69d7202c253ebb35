"""flexsfc.dataplane"""
