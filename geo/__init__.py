"""Who is asking and where: client info, segments, GeoIP, nearest routing. Imports nothing else."""
