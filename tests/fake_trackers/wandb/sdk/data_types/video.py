class Video: pass
