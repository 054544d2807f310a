"""The study: screening pipeline (CT in, result out) and the verdict / category rules."""
