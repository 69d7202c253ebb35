"""flexsfc.local"""
