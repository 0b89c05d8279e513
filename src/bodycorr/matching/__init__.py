"""bodycorr.matching"""
