"""bodycorr.data"""
