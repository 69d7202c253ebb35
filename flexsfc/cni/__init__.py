"""flexsfc.cni"""
