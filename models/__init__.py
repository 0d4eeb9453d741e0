"""DUCH hashing networks and discriminator; encoders for preprocessing."""
