"""Models of the talkingface framework."""
