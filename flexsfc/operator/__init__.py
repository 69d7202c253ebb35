"""flexsfc.operator"""
