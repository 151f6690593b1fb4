from xconsumer.cli import entry

# Guarded: isolated slots start child processes with the "spawn" method, which imports the
# parent's main module (as __mp_main__); it must not start a second node there.
if __name__ == "__main__":
    entry()
