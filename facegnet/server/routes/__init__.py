"""The API's endpoints, one module per subject; every router here except ``system`` needs the token."""
