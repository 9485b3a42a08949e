class Run: pass
