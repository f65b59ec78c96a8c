"""Training domain: experiment datasets and PPO policies on experiment partitions."""
