"""bodycorr.geometry"""
