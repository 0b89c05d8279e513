"""bodycorr.body"""
