"""flexsfc.agent"""
