class Image: pass
