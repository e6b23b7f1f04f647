"""Run folders: every path in them, the records that check their files, the settings a rerun must match,
what a folder still has to do, and the results tables read from them."""
