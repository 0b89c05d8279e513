"""bodycorr.cli"""
