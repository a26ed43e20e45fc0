"""GTS (GNU Triangulated Surface) converter for Conveyor."""
