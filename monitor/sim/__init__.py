"""A physically based simulator of biplane fluoroscopy during vertebroplasty."""
