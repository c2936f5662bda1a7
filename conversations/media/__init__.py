"""Photos and voice messages users send: fetched content made safe (images), kept in a
private storage linked to its message, and gone with it on every privacy path."""
