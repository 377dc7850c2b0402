import sys
name = input("What is your name? ")
print(f"Hello, {name}! This is Python {sys.version.split()[0]} ({sys.implementation.name}).")
