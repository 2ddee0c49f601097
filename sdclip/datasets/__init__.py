"""Data sdclip makes itself: the procedural captioned shapes the demo model is trained and tested on."""
