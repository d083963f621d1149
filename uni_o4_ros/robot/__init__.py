"""Go1 facts and rules without ROS: joint order, observation (58 x 5), reward (Table 3), safety,
policy-update verification."""
