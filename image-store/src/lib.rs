//! Content-addressed OCI image store: import, pull, unpack and image configs.
