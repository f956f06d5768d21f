"""Raw data sets on disk and their conversion to a backbone's input."""
