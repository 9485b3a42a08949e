class WBValue: pass
