"""Result classes and the printable Summary."""
